// Package deploy holds Evo's deployment files and the tests that run them:
// cluster.sh (two replicas behind nginx on loopback, no Docker), the nginx
// config template it shares with docker-compose.yml, and cluster_test.go,
// which drives that cluster through nginx. It has no Go API.
package deploy
