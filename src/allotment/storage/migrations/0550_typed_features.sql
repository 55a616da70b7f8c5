-- Typed features of the /v1 catalog (docs/catalog.md): the same features table, with the
-- type and its fields. Rows created on /api/v1 keep NULL here and read as NUMBER budgets
-- (metered) or SWITCH features; every existing row is kept as it is.
ALTER TABLE features ADD COLUMN feature_type TEXT;
ALTER TABLE features ADD COLUMN enum_values TEXT;
ALTER TABLE features ADD COLUMN currency TEXT;
ALTER TABLE features ADD COLUMN usage_period TEXT;
ALTER TABLE features ADD COLUMN rate_window TEXT;
ALTER TABLE features ADD COLUMN description TEXT;
