{%- set _ = source('silver', 'products') -%}
with source as (
    select * from {{ silver_parquet('products', snapshot=true) }}
),

renamed as (
    select
        product_id,
        name as product_name,
        category_code,
        split_part(category_code, '.', 1) as top_category,
        brand,
        cast(price as double precision) as price,
        currency,
        cast(valid_from as timestamp) as valid_from,
        cast(valid_to as timestamp) as valid_to,
        is_current
    from source
)

select * from renamed
