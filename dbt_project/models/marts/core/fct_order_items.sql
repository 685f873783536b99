with items as (
    select * from {{ ref('stg_order_items') }}
),

orders as (
    select order_id, order_date, order_status from {{ ref('stg_orders') }}
),

final as (
    select
        items.order_item_id,
        items.order_id,
        orders.order_date,
        orders.order_status,
        items.line_no,
        items.product_id,
        items.category_code,
        items.quantity,
        items.unit_price,
        items.line_amount
    from items
    inner join orders on orders.order_id = items.order_id
)

select * from final
