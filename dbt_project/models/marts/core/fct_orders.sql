with orders as (
    select * from {{ ref('stg_orders') }}
),

items as (
    select
        order_id,
        count(*) as n_lines,
        sum(quantity) as n_units,
        {{ money_sum('line_amount') }} as items_total
    from {{ ref('stg_order_items') }}
    group by 1
),

payments as (
    select order_id, payment_status
    from {{ ref('stg_payments') }}
),

final as (
    select
        orders.order_id,
        orders.user_id,
        orders.anonymous_id,
        orders.order_status,
        orders.order_total,
        orders.currency,
        orders.payment_method,
        orders.ordered_at,
        orders.order_date,
        orders.updated_at,
        items.n_lines,
        items.n_units,
        items.items_total,
        payments.payment_status,
        orders.order_status in ('cancelled', 'refunded') as is_cancelled_or_refunded
    from orders
    left join items on items.order_id = orders.order_id
    left join payments on payments.order_id = orders.order_id
)

select * from final
