-- Harbor's API gives every tag an integer id (`Tag.id`); tags were keyed only by
-- (repository, name). The id stays with the row when a push moves the tag.
ALTER TABLE tags ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY;
