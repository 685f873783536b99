{%- set _ = source('silver', 'payments') -%}
with source as (
    select * from {{ silver_parquet('payments', snapshot=true) }}
),

renamed as (
    select
        payment_id,
        order_id,
        method as payment_method,
        cast(amount as double precision) as amount,
        status as payment_status,
        cast(updated_at as timestamp) as updated_at
    from source
)

select * from renamed
