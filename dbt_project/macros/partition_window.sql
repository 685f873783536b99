{# The Dagster partition window: inclusive dates (macros/run_setting.sql). #}
{% macro in_partition_window(date_column) -%}
    {{ date_column }} between cast('{{ run_setting("min_date") }}' as date) and cast('{{ run_setting("max_date") }}' as date)
{%- endmacro %}

{# Incremental marts replace exactly their window: delete it, then append the recomputed rows.
   Re-running a partition therefore gives the same rows, and neighbours are untouched. #}
{% macro delete_partition_window(date_column) -%}
    {% if is_incremental() %}
    delete from {{ this }} where {{ in_partition_window(date_column) }}
    {% endif %}
{%- endmacro %}

{# Ratios are rounded to 6 places: float sums in parallel aggregation are not bit-stable,
   and a re-run partition must give the same rows. #}
{% macro safe_divide(numerator, denominator) -%}
    case when coalesce({{ denominator }}, 0) = 0 then null else {{ round_float('cast(' ~ numerator ~ ' as double precision) / ' ~ denominator, 6) }} end
{%- endmacro %}

{# Money sums rounded to cents (same reason). #}
{% macro money_sum(expression) -%}
    cast(round(cast(sum({{ expression }}) as numeric(18, 4)), 2) as double precision)
{%- endmacro %}

{% macro stable_avg(expression) -%}
    {{ round_float('avg(' ~ expression ~ ')', 6) }}
{%- endmacro %}

{# round(double, n): DuckDB has it; Postgres only rounds numeric. #}
{% macro round_float(expression, places) -%}
    {{ return(adapter.dispatch('round_float')(expression, places)) }}
{%- endmacro %}

{% macro default__round_float(expression, places) -%}
    round({{ expression }}, {{ places }})
{%- endmacro %}

{% macro postgres__round_float(expression, places) -%}
    cast(round(cast({{ expression }} as numeric), {{ places }}) as double precision)
{%- endmacro %}
