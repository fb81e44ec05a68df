package headwater

import (
	"context"
	"net"
	"os"
	"sync"

	"github.com/headwater-streaming/headwater/sdk-go/internal/server"
	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// Version is the SDK's version; the worker reports it to the host in the handshake
// ("headwater-go 0.1.0 (go1.26.8)").
const Version = worker.Version

var registry struct {
	sync.Mutex
	functions []Function
}

// Register adds functions to the ones [Main] serves, e.g. from the init functions of
// several packages. Problems (duplicate names, a nil function) are reported by Main.
func Register(fns ...Function) {
	registry.Lock()
	defer registry.Unlock()
	registry.functions = append(registry.functions, fns...)
}

func registered() []Function {
	registry.Lock()
	defer registry.Unlock()
	return append([]Function(nil), registry.functions...)
}

// Main registers fns, serves every registered function as a worker process, and exits; call
// it from your main function:
//
//	func main() {
//		headwater.Main(
//			headwater.Map("enrich", enrich),
//			headwater.KeyedProcess("sessionize", sessionize),
//		)
//	}
//
// The launch contract (the host starts the built binary itself):
//
//   - `--socket PATH` listens on a Unix domain socket (a stale file there is removed first);
//     `--address HOST:PORT` on TCP, for a worker run by hand or as a sidecar container.
//   - With --socket, the worker exits (code 0) when its parent process is no longer the host,
//     whose pid is in $HEADWATER_HOST_PID (checked at start and every 0.5 s).
//   - When serving it prints `headwater worker ready on ADDRESS: NAME, NAME` to stdout.
//   - Exit codes: 0 after SIGTERM/SIGINT (a graceful stop) or when the host is gone; 1 when it
//     cannot listen; 2 for a bad command line; 3 when no functions are registered or they
//     cannot be served (duplicate names, ...), with the problem on stderr.
func Main(fns ...Function) {
	Register(fns...)
	os.Exit(server.Main(os.Args[1:], func() (*worker.Handler, error) { return handler(registered()) }, os.Stdout, os.Stderr))
}

// Serve serves fns (only these, not the registered ones) on lis until ctx is done, then
// stops gracefully and returns nil; for embedding a worker in a program of your own, and for
// tests. It returns an error when fns cannot be served or serving fails.
func Serve(ctx context.Context, lis net.Listener, fns ...Function) error {
	h, err := handler(fns)
	if err != nil {
		return err
	}
	return server.Serve(ctx, lis, h)
}
