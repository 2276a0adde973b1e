// Command shardline-bench measures the Go client's throughput: it puts N records
// of SIZE bytes to a running agent's framed socket as fast as it can from one
// process, waits for every ack, and prints one JSON line per round.
//
//	shardline-bench --socket PATH --records N --size 256 [--rounds R] [--goroutines G]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	shardline "shardline/clients/go"
)

type round struct {
	Client        string  `json:"client"`
	Records       int     `json:"records"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
}

func main() {
	socket := flag.String("socket", "", "the agent's framed socket")
	records := flag.Int("records", 1000000, "records per round")
	size := flag.Int("size", 256, "bytes per record")
	rounds := flag.Int("rounds", 1, "rounds")
	goroutines := flag.Int("goroutines", 1, "goroutines putting records")
	flag.Parse()
	if *socket == "" || *records < 1 || *size < 16 || *rounds < 1 || *goroutines < 1 {
		fmt.Fprintln(os.Stderr, "usage: shardline-bench --socket PATH --records N --size BYTES [--rounds R] [--goroutines G]")
		os.Exit(2)
	}
	p, err := shardline.New(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	failed := 0
	for r := 0; r < *rounds; r++ {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]int, *goroutines)
		for g := 0; g < *goroutines; g++ {
			lo, hi := *records*g / *goroutines, *records*(g+1) / *goroutines
			wg.Add(1)
			go func(g, lo, hi int) {
				defer wg.Done()
				errs[g] = put(p, r, lo, hi, *size)
			}(g, lo, hi)
		}
		wg.Wait()
		secs := time.Since(start).Seconds()
		for _, e := range errs {
			failed += e
		}
		line, _ := json.Marshal(round{"go", *records, secs, float64(*records) / secs})
		fmt.Println(string(line))
	}
	if err := p.Close(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "%d records failed\n", failed)
		os.Exit(1)
	}
}

// put puts records lo..hi of round r and waits for their answers; returns how
// many failed.
func put(p *shardline.Producer, r, lo, hi, size int) int {
	data := make([]byte, size)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	// Records of one frame share a Result: keep each distinct one once.
	var results []*shardline.Result
	var counts []int
	for i := lo; i < hi; i++ {
		stamp(data, r, i)
		res, err := p.Put(data)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if n := len(results); n > 0 && results[n-1] == res {
			counts[n-1]++
		} else {
			results = append(results, res)
			counts = append(counts, 1)
		}
	}
	failed := 0
	for i, res := range results {
		if err := res.Wait(context.Background()); err != nil {
			if failed == 0 {
				fmt.Fprintln(os.Stderr, err)
			}
			failed += counts[i]
		}
	}
	return failed
}

// stamp writes "ROUND-NUMBER " over the start of data (in place, within its
// length), so that every record differs.
func stamp(data []byte, r, i int) {
	var buf [48]byte
	b := strconv.AppendInt(buf[:0], int64(r), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ' ')
	copy(data, b)
}
