{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('category_date') }}",
    )
}}

with products as (
    select * from {{ ref('mart_product_performance') }}
    where {{ in_partition_window('performance_date') }}
),

final as (
    select
        performance_date as category_date,
        coalesce(top_category, 'unknown') as top_category,
        count(distinct product_id) filter (where n_views > 0) as n_products_viewed,
        sum(n_views) as n_views,
        sum(n_cart_adds) as n_cart_adds,
        sum(units_sold) as units_sold,
        {{ money_sum('revenue') }} as revenue,
        {{ safe_divide('sum(units_sold)', 'sum(n_views)') }} as units_per_view
    from products
    group by 1, 2
)

select * from final
