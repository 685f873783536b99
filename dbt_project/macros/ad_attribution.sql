{#
  Ad events of the window with, for clicks, whether the same visitor bought later the same day
  (last-click attribution within the day). Used by the ad marts.
#}
{% macro ad_events_with_attribution() -%}
    ads as (
        select * from {{ ref('fct_events') }}
        where {{ in_partition_window('event_date') }} and not is_bot
            and event_type in ('ad_impression', 'ad_click')
    ),

    purchases as (
        select event_date, anonymous_id, event_at, order_total
        from {{ ref('fct_events') }}
        where {{ in_partition_window('event_date') }} and not is_bot and event_type = 'purchase'
    ),

    last_click as (
        select
            p.event_date,
            p.anonymous_id,
            p.event_at as purchased_at,
            p.order_total,
            max(a.event_at) as clicked_at
        from purchases as p
        inner join ads as a
            on a.anonymous_id = p.anonymous_id and a.event_date = p.event_date
            and a.event_type = 'ad_click' and a.event_at <= p.event_at
        group by 1, 2, 3, 4
    ),

    ad_events as (
        select
            a.*,
            l.order_total as attributed_revenue,
            l.purchased_at is not null as is_attributed
        from ads as a
        left join last_click as l
            on a.event_type = 'ad_click' and l.anonymous_id = a.anonymous_id and l.clicked_at = a.event_at
    )
{%- endmacro %}

{# Impressions, clicks and CTR over ad_events (a grouped select). #}
{% macro ad_counts() -%}
        count(*) filter (where event_type = 'ad_impression') as n_impressions,
        count(*) filter (where event_type = 'ad_click') as n_clicks,
        {{ safe_divide("count(*) filter (where event_type = 'ad_click')", "count(*) filter (where event_type = 'ad_impression')") }} as ctr
{%- endmacro %}
