{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('ctr_date') }}",
    )
}}

with {{ ad_events_with_attribution() }},

final as (
    select
        event_date as ctr_date,
        event_hour as ctr_hour,
        count(*) filter (where event_type = 'ad_impression') as n_impressions,
        count(*) filter (where event_type = 'ad_click') as n_clicks,
        {{ safe_divide("count(*) filter (where event_type = 'ad_click')", "count(*) filter (where event_type = 'ad_impression')") }} as ctr
    from ad_events
    group by 1, 2
)

select * from final
