{# Flatten purchase events' items (a list of structs in the lake). DuckDB unnests natively. #}
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
