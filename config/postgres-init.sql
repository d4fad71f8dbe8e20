-- Run once by the postgres container on first start (compose.yaml): a second database
-- for the Prefect server next to the ops DB.
CREATE DATABASE prefect OWNER llmops;
