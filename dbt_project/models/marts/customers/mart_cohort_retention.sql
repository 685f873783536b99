with activity as (
    select distinct
        anonymous_id,
        cast(date_trunc('week', event_date) as date) as activity_week
    from {{ ref('stg_events') }}
    where not is_bot and event_date <= cast('{{ run_setting("max_date") }}' as date)
),

cohorts as (
    select anonymous_id, min(activity_week) as cohort_week
    from activity
    group by 1
),

sizes as (
    select cohort_week, count(*) as cohort_size
    from cohorts
    group by 1
),

retention as (
    select
        c.cohort_week,
        a.activity_week,
        cast((a.activity_week - c.cohort_week) / 7 as integer) as week_number,
        count(*) as n_active
    from activity as a
    inner join cohorts as c on c.anonymous_id = a.anonymous_id
    group by 1, 2, 3
),

final as (
    select
        r.cohort_week,
        r.week_number,
        r.activity_week,
        s.cohort_size,
        r.n_active,
        {{ safe_divide('r.n_active', 's.cohort_size') }} as retention_rate
    from retention as r
    inner join sizes as s on s.cohort_week = r.cohort_week
)

select * from final
