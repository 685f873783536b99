{# A parent's amount equals the sum over its children (e.g. order total = sum of its items). #}
{% test equals_sum_of(model, column_name, child_model, child_key, parent_key, child_expression, tolerance=0.01) %}
with children as (
    select {{ child_key }} as k, sum({{ child_expression }}) as total
    from {{ child_model }}
    group by 1
)
select p.{{ parent_key }}, p.{{ column_name }}, c.total
from {{ model }} as p
join children as c on c.k = p.{{ parent_key }}
where abs(p.{{ column_name }} - c.total) > {{ tolerance }}
{% endtest %}
