{{ config(materialized='view', schema='staging') }}

with purchases as (
    select * from {{ ref('stg_events') }}
    where event_type = 'purchase'
),

items as (
    {{ unnest_purchase_items('purchases') }}
)

select * from items
