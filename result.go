package iopool

// Result is a value or an error, the output of futures that can fail.
type Result[T any] struct {
	Value T
	Err   error
}

// awaitResult awaits a future of Result and splits it.
func awaitResult[T any](t *Task, fut Future[Result[T]]) (T, error) {
	r, err := Await(t, fut)
	if err != nil {
		return r.Value, err
	}
	return r.Value, r.Err
}
