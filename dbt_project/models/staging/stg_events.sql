{%- set _ = source('silver', 'events') -%}
with source as (
    select * from {{ silver_parquet('events') }}
),

renamed as (
    select
        event_id,
        event_type,
        schema_version,
        event_at,
        event_date,
        extract(hour from event_at) as event_hour,
        received_at,
        anonymous_id,
        user_id,
        session_id as client_session_id,
        platform,
        coalesce(device_type, 'unknown') as device_type,
        browser,
        os,
        country,
        page_type,
        page_url,
        utm_source,
        utm_medium,
        utm_campaign,
        product_id,
        category as category_code,
        split_part(category, '.', 1) as top_category,
        brand,
        price,
        quantity,
        unit_price,
        cart_value,
        order_id,
        items,
        total as order_total,
        payment_method,
        query as search_query,
        ad_id,
        campaign_id,
        banner_position,
        placement,
        coalesce(site_category, app_category) as inventory_category,
        case when app_id is not null then 'app' else 'site' end as inventory_type,
        is_bot
    from source
)

select * from renamed
