{#
  Where a silver table is read from.
  - DuckDB reads the Parquet lake in place (a folder, or s3:// through the fsspec filesystem that
    profiles.yml registers): daily tables (events, sessions, quarantine) from every
    date=* partition; snapshot tables (orders, products, ...) from the partition of the run's
    max_date, which holds the state as of the end of that day.
  - Postgres reads schema "silver", loaded from the same partitions before the build
    (pipeline_assets/gold/pg_load.py): daily tables accumulate, snapshot tables are replaced.
#}
{% macro silver_parquet(table, snapshot=false) -%}
    {{ return(adapter.dispatch('silver_parquet')(table, snapshot)) }}
{%- endmacro %}

{% macro default__silver_parquet(table, snapshot=false) -%}
    {%- set root = run_setting("lake_root") -%}
    {%- if snapshot -%}
        read_parquet('{{ root }}/silver/{{ table }}/date={{ run_setting("max_date") }}/part-0.parquet')
    {%- else -%}
        read_parquet('{{ root }}/silver/{{ table }}/date=*/part-0.parquet', union_by_name = true, hive_partitioning = false)
    {%- endif -%}
{%- endmacro %}

{% macro postgres__silver_parquet(table, snapshot=false) -%}
    {{ source('silver', table) }}
{%- endmacro %}
