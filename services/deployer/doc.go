// Package deployer is the deployer service (in progress).
package deployer
