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
        banner_position,
        {{ ad_counts() }},
        count(*) filter (where is_attributed) as n_attributed_purchases,
        coalesce({{ money_sum('attributed_revenue') }}, 0) as attributed_revenue
    from ad_events
    group by 1, 2
)

select * from final
