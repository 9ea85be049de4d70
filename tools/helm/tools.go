//go:build tools

// Package helm pins the helm command the chart tests run (built by build.sh).
package helm

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
