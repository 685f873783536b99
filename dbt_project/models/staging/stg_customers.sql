{%- set _ = source('silver', 'customers') -%}
with source as (
    select * from {{ silver_parquet('customers', snapshot=true) }}
),

renamed as (
    select
        customer_id as user_id,
        email as email_token,
        country,
        segment,
        cast(valid_from as timestamp) as valid_from,
        cast(valid_to as timestamp) as valid_to,
        is_current,
        cast(created_at as timestamp) as created_at
    from source
)

select * from renamed
