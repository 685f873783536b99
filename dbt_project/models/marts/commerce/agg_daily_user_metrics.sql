{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('activity_date') }}",
    )
}}

with sessions as (
    select * from {{ ref('fct_sessions') }}
    where {{ in_partition_window('session_date') }} and not is_bot
),

per_user_day as (
    select
        session_date as activity_date,
        coalesce(user_id, anonymous_id) as user_key,
        max(user_id) as user_id,
        count(*) as n_sessions,
        sum(n_events) as n_events,
        sum(n_page_views) as n_page_views,
        sum(n_add_to_carts) as n_add_to_carts,
        sum(n_purchases) as n_purchases,
        {{ money_sum('revenue') }} as revenue,
        count(*) filter (where n_add_to_carts > 0) as n_cart_sessions,
        count(*) filter (where n_add_to_carts > 0 and is_converted) as n_converted_cart_sessions
    from sessions
    group by 1, 2
),

final as (
    select
        activity_date,
        user_key,
        user_id,
        n_events,
        n_sessions,
        n_page_views,
        n_add_to_carts,
        n_purchases,
        revenue,
        {{ safe_divide('revenue', 'n_purchases') }} as average_order_value,
        {{ safe_divide('n_converted_cart_sessions', 'n_cart_sessions') }} as cart_conversion_rate
    from per_user_day
)

select * from final
