// The spec's WebSocket example, verbatim apart from the URL and key (given as arguments), run under Node
// with the `ws` package. It prints each update as the spec does and exits once a job completes.
const WebSocket = require('ws');
const [url, apiKey] = process.argv.slice(2);

const ws = new WebSocket(url);
ws.onopen = () => {
  ws.send(JSON.stringify({
    api_key: apiKey,
    subscribe: ['job_updates', 'backend_status']
  }));
};
ws.onmessage = (event) => {
  const update = JSON.parse(event.data);
  console.log(`Job ${update.job_id}: ${update.status}`);
  if (update.type === 'subscribed') {
    console.log('READY');  // the test submits its job now
  }
  if (update.type === 'job_update' && update.status === 'completed') {
    ws.close();
  }
};
ws.onclose = () => process.exit(0);
setTimeout(() => { console.log('TIMEOUT'); process.exit(2); }, 60000);
