//go:build tools

// Package controlplane pins the Kubernetes and etcd commands the tests run: the control
// plane's, and the node's (kubelet, kube-scheduler, kube-proxy) for tests/e2e_node.rs.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
