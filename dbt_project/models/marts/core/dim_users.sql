with customers as (
    select * from {{ ref('stg_customers') }} where is_current
),

activity as (
    select
        user_id,
        min(event_date) as first_seen_date,
        max(event_date) as last_seen_date
    from {{ ref('stg_events') }}
    where user_id is not null
    group by 1
),

orders as (
    select
        user_id,
        count(*) as n_orders,
        {{ money_sum('order_total') }} as lifetime_revenue,
        min(order_date) as first_order_date
    from {{ ref('stg_orders') }}
    where order_status not in ('cancelled')
    group by 1
),

final as (
    select
        customers.user_id,
        customers.email_token,
        customers.country,
        customers.segment,
        customers.created_at as customer_since,
        activity.first_seen_date,
        activity.last_seen_date,
        coalesce(orders.n_orders, 0) as n_orders,
        coalesce(orders.lifetime_revenue, 0) as lifetime_revenue,
        orders.first_order_date
    from customers
    left join activity on activity.user_id = customers.user_id
    left join orders on orders.user_id = customers.user_id
)

select * from final
