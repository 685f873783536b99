{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('kpi_date') }}",
    )
}}

with sessions as (
    select * from {{ ref('fct_sessions') }}
    where {{ in_partition_window('session_date') }} and not is_bot
),

purchases as (
    select event_date, count(distinct order_id) as n_orders, {{ money_sum('order_total') }} as revenue
    from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date') }} and event_type = 'purchase' and not is_bot
    group by 1
),

first_seen as (
    select anonymous_id, min(event_date) as first_seen_date
    from {{ ref('stg_events') }}
    group by 1
),

daily as (
    select
        s.session_date as kpi_date,
        count(distinct s.anonymous_id) as daily_active_visitors,
        count(distinct s.anonymous_id) filter (where f.first_seen_date = s.session_date) as new_visitors,
        count(*) as n_sessions,
        {{ stable_avg("case when s.is_bounce then 1.0 else 0.0 end") }} as bounce_rate,
        {{ stable_avg("case when s.is_converted then 1.0 else 0.0 end") }} as conversion_rate,
        {{ stable_avg("s.duration_seconds") }} as avg_session_seconds
    from sessions as s
    left join first_seen as f on f.anonymous_id = s.anonymous_id
    group by 1
),

final as (
    select
        d.kpi_date,
        d.daily_active_visitors,
        d.new_visitors,
        d.daily_active_visitors - d.new_visitors as returning_visitors,
        d.n_sessions,
        d.bounce_rate,
        d.conversion_rate,
        d.avg_session_seconds,
        coalesce(p.n_orders, 0) as n_orders,
        coalesce(p.revenue, 0) as revenue,
        {{ safe_divide('p.revenue', 'p.n_orders') }} as average_order_value
    from daily as d
    left join purchases as p on p.event_date = d.kpi_date
)

select * from final
