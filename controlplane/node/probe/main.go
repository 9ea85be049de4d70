// Command probe is the network probe of the test node (tests/e2e_node.rs). A probe pod runs
// `probe sleep`; the test runs the checks through `kubectl exec`:
//
//	probe tcp HOST:PORT         connect (3 s timeout); prints "connected" and exits 0, else the error (stderr) and exits 1
//	probe tls HOST:PORT         TLS handshake without a client certificate (server certificate not checked)
//	probe http URL              GET; prints the status code and exits 0 on any answer
//	probe dns NAME              resolves NAME; prints the addresses, one per line
//	probe write PATH            creates PATH (fails on a read-only root filesystem)
//	probe sleep                 waits for SIGTERM
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const timeout = 3 * time.Second

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "sleep" && len(os.Args) < 3) {
		fmt.Fprintln(os.Stderr, "usage: probe tcp|tls|http|dns|write TARGET, or probe sleep")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sleep":
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
		return
	case "tcp":
		var c net.Conn
		if c, err = net.DialTimeout("tcp", os.Args[2], timeout); err == nil {
			c.Close()
			fmt.Println("connected")
		}
	case "tls":
		var c *tls.Conn
		dialer := &net.Dialer{Timeout: timeout}
		config := &tls.Config{InsecureSkipVerify: true}
		if c, err = tls.DialWithDialer(dialer, "tcp", os.Args[2], config); err == nil {
			// TLS 1.3 reports a refused client certificate only after the handshake: read once.
			c.SetReadDeadline(time.Now().Add(timeout))
			_, rerr := c.Read(make([]byte, 1))
			c.Close()
			if rerr != nil && !os.IsTimeout(rerr) {
				err = rerr
			} else {
				fmt.Println("handshake completed")
			}
		}
	case "http":
		client := &http.Client{Timeout: timeout}
		var resp *http.Response
		if resp, err = client.Get(os.Args[2]); err == nil {
			resp.Body.Close()
			fmt.Println(resp.StatusCode)
		}
	case "dns":
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var addrs []string
		if addrs, err = net.DefaultResolver.LookupHost(ctx, os.Args[2]); err == nil {
			for _, a := range addrs {
				fmt.Println(a)
			}
		}
	case "write":
		if err = os.WriteFile(os.Args[2], []byte("probe\n"), 0o600); err == nil {
			fmt.Println("written")
		}
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
