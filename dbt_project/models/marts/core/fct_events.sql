{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('event_date') }}",
    )
}}

with events as (
    select * from {{ ref('stg_events') }}
    where {{ in_partition_window('event_date') }}
),

final as (
    select
        event_id,
        event_type,
        event_at,
        event_date,
        event_hour,
        anonymous_id,
        user_id,
        platform,
        device_type,
        browser,
        os,
        country,
        page_type,
        product_id,
        category_code,
        top_category,
        brand,
        price,
        quantity,
        unit_price,
        order_id,
        order_total,
        payment_method,
        search_query,
        ad_id,
        campaign_id,
        banner_position,
        placement,
        inventory_type,
        inventory_category,
        utm_source,
        utm_medium,
        utm_campaign,
        is_bot
    from events
)

select * from final
