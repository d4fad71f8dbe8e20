-- title: Eval scores per prompt version over time
-- about: Mean score and pass rate of each eval run, by prompt and version, in run order.
-- requires: eval_runs(id, suite, prompt_name, prompt_version, model_group, started_at), eval_results(run_id, score, passed)
SELECT
    r.id                                                    AS run_id,
    r.suite,
    r.prompt_name,
    r.prompt_version,
    r.model_group,
    r.started_at,
    count(*)                                                AS results,
    round(avg(x.score), 4)                                  AS mean_score,
    round(count(*) FILTER (WHERE x.passed) / count(*), 4)   AS pass_rate
FROM eval_runs r
JOIN eval_results x ON x.run_id = r.id
GROUP BY ALL
ORDER BY r.started_at, r.prompt_name, r.prompt_version;
