// Command coredns is CoreDNS with only the plugins the test node's cluster DNS needs
// (kubernetes, cache, errors, health, ready), built the way CoreDNS documents for custom
// builds: the plugin packages imported and their order set in dnsserver.Directives. The full
// build links every cloud provider's SDK and takes minutes longer on two cores.
// Without a forward plugin, names outside cluster.local are refused: no query leaves the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The same relative order as CoreDNS's plugin.cfg.
var directives = []string{"ready", "health", "errors", "cache", "kubernetes"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
