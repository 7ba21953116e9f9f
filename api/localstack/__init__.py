"""The local stack: real servers for zero setup and for the tests, not part of the service.

What belongs here: the embedded PostgreSQL and Redis that `relayflow up` starts when
DATABASE_URL/REDIS_URL are unset (`embedded`, with its OS plumbing in `embedded_os`: the
unprivileged service account, free ports, children that die with their parent), and the fake
OpenAI-compatible LLM provider of `relayflow up --demo` and the tests (`fake_llm`).

What it may import: `engine` (settings, the error tree) and third-party libraries; nothing of
`api` outside this package. Who imports it: `api.cli` (tooling), the tests and the benchmarks;
never `engine`, `workers` or `api`'s HTTP modules (tests/unit/test_import_rules.py).
"""
