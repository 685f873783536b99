{%- set _ = source('silver', 'order_items') -%}
with source as (
    select * from {{ silver_parquet('order_items', snapshot=true) }}
),

renamed as (
    select
        order_id || '-' || cast(line_no as varchar) as order_item_id,
        order_id,
        line_no,
        product_id,
        quantity,
        cast(unit_price as double precision) as unit_price,
        quantity * cast(unit_price as double precision) as line_amount,
        category_code
    from source
)

select * from renamed
