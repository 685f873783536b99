{# Flatten purchase events' items. DuckDB unnests the lake's list of structs natively; Postgres walks jsonb. #}
{% macro unnest_purchase_items(relation) -%}
    {{ return(adapter.dispatch('unnest_purchase_items')(relation)) }}
{%- endmacro %}

{% macro default__unnest_purchase_items(relation) -%}
    select
        p.event_id,
        p.event_date,
        p.event_at,
        p.anonymous_id,
        p.user_id,
        p.order_id,
        p.is_bot,
        item.product_id as product_id,
        item.quantity as quantity,
        cast(item.unit_price as double precision) as unit_price,
        item.quantity * cast(item.unit_price as double precision) as line_amount,
        coalesce(item.category, '') as category_code,
        split_part(coalesce(item.category, ''), '.', 1) as top_category
    from {{ relation }} as p, unnest(p.items) as t(item)
{%- endmacro %}

{# Postgres keeps the items as jsonb (pipeline_assets/gold/pg_load.py). #}
{% macro postgres__unnest_purchase_items(relation) -%}
    select
        p.event_id,
        p.event_date,
        p.event_at,
        p.anonymous_id,
        p.user_id,
        p.order_id,
        p.is_bot,
        item ->> 'product_id' as product_id,
        cast(item ->> 'quantity' as bigint) as quantity,
        cast(item ->> 'unit_price' as double precision) as unit_price,
        cast(item ->> 'quantity' as bigint) * cast(item ->> 'unit_price' as double precision) as line_amount,
        coalesce(item ->> 'category', '') as category_code,
        split_part(coalesce(item ->> 'category', ''), '.', 1) as top_category
    from {{ relation }} as p
    cross join lateral jsonb_array_elements(p.items) as t(item)
{%- endmacro %}
