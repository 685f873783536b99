with products as (
    select * from {{ ref('stg_products') }}
),

current_version as (
    select * from products where is_current
),

history as (
    select product_id, count(*) as n_price_versions, min(price) as min_price, max(price) as max_price
    from products
    group by 1
),

final as (
    select
        c.product_id,
        c.product_name,
        c.category_code,
        c.top_category,
        c.brand,
        c.price as current_price,
        c.currency,
        c.valid_from as price_since,
        h.n_price_versions,
        h.min_price,
        h.max_price
    from current_version as c
    left join history as h on h.product_id = c.product_id
)

select * from final
