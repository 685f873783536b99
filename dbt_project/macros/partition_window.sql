{# The Dagster partition window: inclusive dates passed as --vars '{"min_date": ..., "max_date": ...}'. #}
{% macro in_partition_window(date_column) -%}
    {{ date_column }} between cast('{{ var("min_date") }}' as date) and cast('{{ var("max_date") }}' as date)
{%- endmacro %}

{# Incremental marts replace exactly their window: delete it, then append the recomputed rows.
   Re-running a partition therefore gives the same rows, and neighbours are untouched. #}
{% macro delete_partition_window(date_column) -%}
    {% if is_incremental() %}
    delete from {{ this }} where {{ in_partition_window(date_column) }}
    {% endif %}
{%- endmacro %}

{% macro safe_divide(numerator, denominator) -%}
    case when coalesce({{ denominator }}, 0) = 0 then null else cast({{ numerator }} as double precision) / {{ denominator }} end
{%- endmacro %}
