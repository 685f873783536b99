{#
  Where a silver table is read from. DuckDB reads the Parquet lake directly:
  - daily tables (events, sessions, quarantine): every date=* partition;
  - snapshot tables (orders, products, ...): the partition of the run's max_date, which holds the
    state as of the end of that day.
#}
{% macro silver_parquet(table, snapshot=false) -%}
    {%- set root = var("lake_root") -%}
    {%- if snapshot -%}
    read_parquet('{{ root }}/silver/{{ table }}/date={{ var("max_date") }}/part-0.parquet')
    {%- else -%}
    read_parquet('{{ root }}/silver/{{ table }}/date=*/part-0.parquet', union_by_name = true, hive_partitioning = false)
    {%- endif -%}
{%- endmacro %}
