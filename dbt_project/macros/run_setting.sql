{#
  The run's settings: the partition window (min_date, max_date, inclusive) and the lake root.

  Dagster passes them as environment variables (SHOPLAKE_DBT_MIN_DATE, SHOPLAKE_DBT_MAX_DATE,
  SHOPLAKE_LAKE_ROOT); `--vars '{"min_date": ...}'` still overrides them by hand.

  They are read only when dbt executes, never while it parses: a --vars value that changes on
  every run makes dbt throw its partial-parse state away and parse the whole project again
  (seconds per run), and an env_var() read at parse time is tracked per file with the same effect.
  At parse time the macro returns a placeholder, which is never run.
#}
{% macro run_setting(name) -%}
    {%- set env = {
        "min_date": "SHOPLAKE_DBT_MIN_DATE",
        "max_date": "SHOPLAKE_DBT_MAX_DATE",
        "lake_root": "SHOPLAKE_LAKE_ROOT",
    }[name] -%}
    {%- if not execute -%}
        {{ return("../.shoplake/lake" if name == "lake_root" else "1970-01-01") }}
    {%- endif -%}
    {%- set value = var(name, none) or env_var(env, "") -%}
    {%- if not value -%}
        {{ exceptions.raise_compiler_error(
            "shoplake: " ~ name ~ " is not set. Run dbt through Dagster (the gold assets), or pass "
            ~ "--vars '{\"min_date\": \"YYYY-MM-DD\", \"max_date\": \"YYYY-MM-DD\", \"lake_root\": \"<lake>\"}', "
            ~ "or set " ~ env ~ ".") }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}
