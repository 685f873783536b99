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
        {{ ad_counts() }}
    from ad_events
    group by 1, 2
)

select * from final
