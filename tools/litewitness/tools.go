//go:build tools

// Package litewitness pins the Go witness the transparency log is tested against (built by
// build.sh): litewitness serves C2SP tlog-witness, witnessctl registers logs in its database.
package litewitness

import (
	_ "filippo.io/torchwood/cmd/litewitness"
	_ "filippo.io/torchwood/cmd/witnessctl"
)
