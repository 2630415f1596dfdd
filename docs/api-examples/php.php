<?php
// Publish an event to a room from PHP (no extension needed).
//   IOCLUSTER_ADMIN_URL=http://127.0.0.1:8081 IOCLUSTER_API_KEY=... php php.php news hello
[, $room, $text] = $argv;
$context = stream_context_create(['http' => [
    'method' => 'POST',
    'header' => "Authorization: Bearer " . getenv('IOCLUSTER_API_KEY') . "\r\nContent-Type: application/json\r\n",
    'content' => json_encode(['event' => 'news', 'args' => [['text' => $text]], 'to' => ['rooms' => [$room]]]),
    'ignore_errors' => true,
]]);
$body = file_get_contents(getenv('IOCLUSTER_ADMIN_URL') . '/api/v1/publish', false, $context);
if (!str_contains($http_response_header[0], ' 200 ')) {
    fwrite(STDERR, $body . "\n");
    exit(1);
}
echo $body, "\n";
