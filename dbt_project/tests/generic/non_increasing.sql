{# Each column is <= the one before it on every row (funnel steps). #}
{% test non_increasing(model, columns) %}
select *
from {{ model }}
where
{%- for i in range(1, columns | length) %}
    {{ columns[i] }} > {{ columns[i - 1] }}{% if not loop.last %} or{% endif %}
{%- endfor %}
{% endtest %}
