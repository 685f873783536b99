{%- set _ = source('silver', 'sessions') -%}
with source as (
    select * from {{ silver_parquet('sessions') }}
),

renamed as (
    select
        session_id,
        session_date,
        anonymous_id,
        user_id,
        started_at,
        ended_at,
        duration_seconds,
        platform,
        coalesce(device_type, 'unknown') as device_type,
        browser,
        os,
        country,
        landing_page,
        utm_source,
        utm_medium,
        utm_campaign,
        n_events,
        n_page_views,
        n_product_views,
        n_searches,
        n_add_to_carts,
        n_checkouts,
        n_purchases,
        n_ad_impressions,
        n_ad_clicks,
        revenue,
        is_bounce,
        is_converted,
        is_bot
    from source
)

select * from renamed
