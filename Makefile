# The README's two commands. Their logic is in scripts/, plain shell that
# scripts/run_test.go tests; make only names it.
#
#   make run [ARGS="-config FILE ..."]   mcbridge against a local RabbitMQ
#   make test                           every check CI runs (.ci/run calls it)

ARGS ?=

.PHONY: run test

run:
	scripts/run.sh $(ARGS)

test:
	scripts/test.sh
