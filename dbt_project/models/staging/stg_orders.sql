{%- set _ = source('silver', 'orders') -%}
with source as (
    select * from {{ silver_parquet('orders', snapshot=true) }}
),

renamed as (
    select
        order_id,
        customer_id as user_id,
        anonymous_id,
        status as order_status,
        cast(total as double precision) as order_total,
        currency,
        payment_method,
        cast(created_at as timestamp) as ordered_at,
        cast(cast(created_at as timestamp) as date) as order_date,
        cast(updated_at as timestamp) as updated_at
    from source
)

select * from renamed
