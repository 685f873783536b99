{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('as_of_date') }}",
    )
}}

with days as (
    select cast(t.d as date) as as_of_date
    from generate_series(
        cast('{{ run_setting("min_date") }}' as timestamp),
        cast('{{ run_setting("max_date") }}' as timestamp),
        interval '1 day'
    ) as t (d)
),

orders as (
    select * from {{ ref('fct_orders') }}
    where order_status <> 'cancelled'
),

per_user as (
    select
        days.as_of_date,
        orders.user_id,
        days.as_of_date - max(orders.order_date) as recency_days,
        count(*) as frequency,
        {{ money_sum('orders.order_total') }} as monetary
    from days
    inner join orders on orders.order_date <= days.as_of_date
    group by 1, 2
),

scored as (
    select
        *,
        ntile(5) over (partition by as_of_date order by recency_days desc, user_id asc) as recency_score,
        ntile(5) over (partition by as_of_date order by frequency, user_id) as frequency_score,
        ntile(5) over (partition by as_of_date order by monetary, user_id) as monetary_score
    from per_user
),

final as (
    select
        as_of_date,
        user_id,
        recency_days,
        frequency,
        monetary,
        recency_score,
        frequency_score,
        monetary_score,
        case
            when recency_score >= 4 and frequency_score >= 4 then 'champions'
            when frequency_score >= 4 then 'loyal'
            when recency_score >= 4 and frequency = 1 then 'new_customers'
            when recency_score <= 2 and frequency_score >= 3 then 'at_risk'
            when recency_score <= 2 then 'hibernating'
            else 'needs_attention'
        end as rfm_segment
    from scored
)

select * from final
