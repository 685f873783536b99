{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('performance_date') }}",
    )
}}

with {{ ad_events_with_attribution() }},

ad_stats as (
    select
        event_date,
        platform,
        device_type,
        count(*) filter (where event_type = 'ad_impression') as n_impressions,
        count(*) filter (where event_type = 'ad_click') as n_clicks,
        count(*) filter (where is_attributed) as n_attributed_purchases
    from ad_events
    group by 1, 2, 3
),

session_stats as (
    select
        session_date as event_date,
        platform,
        device_type,
        count(*) as n_sessions,
        {{ stable_avg("case when is_converted then 1.0 else 0.0 end") }} as conversion_rate,
        {{ money_sum('revenue') }} as revenue
    from {{ ref('fct_sessions') }}
    where {{ in_partition_window('session_date') }} and not is_bot
    group by 1, 2, 3
),

final as (
    select
        coalesce(s.event_date, a.event_date) as performance_date,
        coalesce(s.platform, a.platform) as platform,
        coalesce(s.device_type, a.device_type) as device_type,
        coalesce(s.n_sessions, 0) as n_sessions,
        s.conversion_rate,
        coalesce(s.revenue, 0) as revenue,
        coalesce(a.n_impressions, 0) as n_impressions,
        coalesce(a.n_clicks, 0) as n_clicks,
        {{ safe_divide('a.n_clicks', 'a.n_impressions') }} as ctr,
        coalesce(a.n_attributed_purchases, 0) as n_attributed_purchases
    from session_stats as s
    full outer join ad_stats as a
        on a.event_date = s.event_date and a.platform = s.platform and a.device_type = s.device_type
)

select * from final
