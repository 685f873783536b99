with bounds as (
    select
        least(min(event_date), cast('{{ run_setting("min_date") }}' as date)) as first_day,
        greatest(max(event_date), cast('{{ run_setting("max_date") }}' as date)) as last_day
    from {{ ref('stg_events') }}
),

days as (
    select cast(t.d as date) as date_day
    from bounds,
        generate_series(
            cast(bounds.first_day as timestamp), cast(bounds.last_day as timestamp), interval '1 day'
        ) as t (d)
),

final as (
    select
        date_day,
        extract(year from date_day) as year,
        extract(month from date_day) as month,
        extract(day from date_day) as day_of_month,
        extract(isodow from date_day) as iso_day_of_week,
        cast(date_trunc('week', date_day) as date) as week_start,
        extract(isodow from date_day) in (6, 7) as is_weekend
    from days
)

select * from final
