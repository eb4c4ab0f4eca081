// A Java 17 client configured only by the environment `keyswap env` prints (JAVA_TOOL_OPTIONS:
// proxy host and port, the PKCS#12 trust store): GET URL with the header NAME: VALUE, then print
// the status, the protocol and the body. Run with `java Fetch.java URL NAME VALUE`.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newHttpClient();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[0])).header(args[1], args[2]).build();
        HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
        System.out.println(response.statusCode() + " " + response.version());
        System.out.println(response.body());
    }
}
