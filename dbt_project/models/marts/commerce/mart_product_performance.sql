{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="{{ delete_partition_window('performance_date') }}",
    )
}}

with events as (
    select * from {{ ref('fct_events') }}
    where {{ in_partition_window('event_date') }} and not is_bot
),

items as (
    select * from {{ ref('int_purchase_items') }}
    where {{ in_partition_window('event_date') }} and not is_bot
),

visitor_product as (
    select
        event_date,
        product_id,
        anonymous_id,
        count(*) filter (where event_type = 'product_view') as n_views,
        count(*) filter (where event_type = 'add_to_cart') as n_cart_adds
    from events
    where event_type in ('product_view', 'add_to_cart')
    group by 1, 2, 3
),

bought as (
    select event_date, product_id, anonymous_id, sum(quantity) as units, {{ money_sum('line_amount') }} as revenue
    from items
    group by 1, 2, 3
),

joined as (
    select
        coalesce(v.event_date, b.event_date) as performance_date,
        coalesce(v.product_id, b.product_id) as product_id,
        coalesce(v.n_views, 0) as n_views,
        coalesce(v.n_cart_adds, 0) as n_cart_adds,
        coalesce(v.n_views, 0) > 0 as viewed,
        coalesce(v.n_views, 0) > 0 and coalesce(v.n_cart_adds, 0) > 0 as viewed_and_carted,
        coalesce(v.n_cart_adds, 0) > 0 and b.units is not null as carted_and_bought,
        coalesce(b.units, 0) as units,
        coalesce(b.revenue, 0) as revenue
    from visitor_product as v
    full outer join bought as b
        on b.event_date = v.event_date and b.product_id = v.product_id and b.anonymous_id = v.anonymous_id
),

per_product as (
    select
        performance_date,
        product_id,
        sum(n_views) as n_views,
        sum(n_cart_adds) as n_cart_adds,
        sum(units) as units_sold,
        {{ money_sum('revenue') }} as revenue,
        count(*) filter (where viewed) as n_viewers,
        count(*) filter (where viewed_and_carted) as n_viewers_who_carted,
        count(*) filter (where n_cart_adds > 0) as n_carters,
        count(*) filter (where carted_and_bought) as n_carters_who_bought
    from joined
    group by 1, 2
),

final as (
    select
        p.performance_date,
        p.product_id,
        d.category_code,
        d.top_category,
        d.brand,
        p.n_views,
        p.n_cart_adds,
        p.units_sold,
        p.revenue,
        {{ safe_divide('p.n_viewers_who_carted', 'p.n_viewers') }} as view_to_cart_rate,
        {{ safe_divide('p.n_carters_who_bought', 'p.n_carters') }} as cart_to_purchase_rate
    from per_product as p
    left join {{ ref('dim_products') }} as d on d.product_id = p.product_id
)

select * from final
