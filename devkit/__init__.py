"""The development kit: the local runner, the replay, the benchmark, the demo and the local venues.

Not the product: the wheel and the Docker image leave this package out (pyproject's package
list, the Dockerfile's COPY lines; tests/test_packaging.py checks both), and aiohttp, which
the local venues serve on, is a development dependency only. The settings install it as a
Django app only where it can be imported, so that `manage.py copier_bench`,
`copier_replay` and `copier_demo` exist in a checkout and not in a deployment. It may
import every floor below it; nothing in core, brokers, accounts or copier imports it
(tests/test_layering.py).
"""
