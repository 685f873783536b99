{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('funnel_date') }}",
    )
}}

with sessions as (
    select * from {{ ref('fct_sessions') }}
    where {{ in_partition_window('session_date') }} and not is_bot
),

steps as (
    select
        session_date as funnel_date,
        platform,
        device_type,
        count(*) as n_sessions,
        count(*) filter (where n_product_views > 0) as n_product_view,
        count(*) filter (where n_product_views > 0 and n_add_to_carts > 0) as n_add_to_cart,
        count(*) filter (where n_product_views > 0 and n_add_to_carts > 0 and n_checkouts > 0) as n_checkout,
        count(*) filter (
            where n_product_views > 0 and n_add_to_carts > 0 and n_checkouts > 0 and n_purchases > 0
        ) as n_purchase
    from sessions
    group by 1, 2, 3
),

final as (
    select
        funnel_date,
        platform,
        device_type,
        n_sessions,
        n_product_view,
        n_add_to_cart,
        n_checkout,
        n_purchase,
        {{ safe_divide('n_product_view', 'n_sessions') }} as session_to_view_rate,
        {{ safe_divide('n_add_to_cart', 'n_product_view') }} as view_to_cart_rate,
        {{ safe_divide('n_checkout', 'n_add_to_cart') }} as cart_to_checkout_rate,
        {{ safe_divide('n_purchase', 'n_checkout') }} as checkout_to_purchase_rate,
        {{ safe_divide('n_purchase', 'n_sessions') }} as session_conversion_rate
    from steps
)

select * from final
