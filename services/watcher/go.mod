module github.com/switchboard-ops/switchboard/services/watcher

go 1.26.0

require (
	github.com/switchboard-ops/switchboard/kit v0.0.0
	github.com/switchboard-ops/switchboard/proto v0.0.0
)

replace (
	github.com/switchboard-ops/switchboard/kit => ../../kit
	github.com/switchboard-ops/switchboard/proto => ../../proto
)
