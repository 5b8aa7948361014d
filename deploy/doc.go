// Package deploy holds no code: its tests check the deployment files next
// to it (systemd units, the container image and compose stack, the
// Kubernetes manifests) against the switchboard they deploy.
package deploy
