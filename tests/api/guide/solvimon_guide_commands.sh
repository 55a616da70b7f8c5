# The curl commands of Solvimon's guide "Configuring entitlements for AI products"
# (shared/seeds/003_*.txt), verbatim and in the guide's order, one per paragraph.
# tests/api/test_v1_guide.py runs each with the host swapped for a real server.

curl -X POST https://test.api.solvimon.com/v1/features \
-H "X-API-KEY: <apiKey>" \
-H "Content-Type: application/json" \
-d '{
"reference": "requests_per_minute",
"name": "Requests Per Minute",
"type": "NUMBER"
}'

curl "https://test.api.solvimon.com/v1/customers/acme-corp/entitlements" \
-H "X-API-KEY: <apiKey>"

curl -X POST https://test.api.solvimon.com/v1/features \
-H "X-API-KEY: <apiKey>" \
-H "Content-Type: application/json" \
-d '{
"reference": "monthly_token_budget",
"name": "Monthly Token Budget",
"type": "NUMBER"
}'

curl "https://test.api.solvimon.com/v1/customers/acme-corp/entitlements" \
-H "X-API-KEY: <apiKey>"

curl "https://test.api.solvimon.com/v1/ingest/meter-data?customer_reference=acme-corp&meter_reference=completion_tokens" \
-H "X-API-KEY: <apiKey>"

curl -X POST https://test.api.solvimon.com/v1/features \
-H "X-API-KEY: <apiKey>" \
-H "Content-Type: application/json" \
-d '{
"reference": "available_models",
"name": "Available Models",
"type": "ENUM",
"enum_values": [
"gpt-4o",
"gpt-4o-mini",
"claude-3-5-sonnet",
"claude-3-5-haiku"
]
}'

curl "https://test.api.solvimon.com/v1/customers/acme-corp/entitlements" \
-H "X-API-KEY: <apiKey>"

curl -X POST https://test.api.solvimon.com/v1/features \
-H "X-API-KEY: <apiKey>" \
-H "Content-Type: application/json" \
-d '{
"reference": "priority_queue",
"name": "Priority Queue",
"type": "SWITCH"
}'

curl -X PATCH https://test.api.solvimon.com/v1/pricing-plan-subscriptions/<subscription_id> \
-H "X-API-KEY: <apiKey>" \
-H "Content-Type: application/json" \
-d '{
"entitlements": [
{
"feature_reference": "monthly_token_budget",
"number": "100000000",
"override": true
}
]
}'
