-- A chat's system prompt.
ALTER TABLE chats ADD COLUMN system TEXT;
